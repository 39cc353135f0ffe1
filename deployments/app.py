"""A module-level application, only for `serve build deployments.app:app`.

Ray 2.60's `serve build` accepts an `Application` object, not a builder function,
so this module builds one when imported, from the environment and `.env`. Nothing
else imports it: `serve run` and `serve deploy` use the builder
(`import_path: deployments.builder:build_app` in `serve_config.yaml`).
"""

from __future__ import annotations

from deployments.builder import build_app

app = build_app({})
