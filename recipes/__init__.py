"""Recipes: experiments built on the library (which never imports them)."""
