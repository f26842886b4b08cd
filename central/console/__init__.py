"""The operator console's page (HTML, JS, CSS) and the vendored Swagger UI: package data, served by
the central service (docs/console.md)."""
