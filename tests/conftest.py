"""
Shared test configuration. Never import the reactor at module level here: it
would break pytest-twisted's --reactor option.
"""
