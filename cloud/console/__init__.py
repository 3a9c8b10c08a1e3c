"""The package holding the dispatcher console's static files (``static/``)."""
