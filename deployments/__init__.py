"""Ray Serve deployments for chatterbox-serve; entry point `deployments.builder:build_app`."""
