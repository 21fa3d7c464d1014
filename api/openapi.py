"""PLACEHOLDER: OpenAPI document builder (being written)."""


def build_document(routes) -> dict:
    return {"openapi": "3.0.3", "info": {"title": "rayborg", "version": "2.3"}, "paths": {}}
