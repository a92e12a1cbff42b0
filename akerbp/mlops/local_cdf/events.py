"""Placeholder: routes land in a later commit."""
from .app import Router

routes = Router()
