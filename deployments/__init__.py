"""Ray Serve deployments for chatterbox-serve; `deployments.builder:build_app` is the entry point."""
