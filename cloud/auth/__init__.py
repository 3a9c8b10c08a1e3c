"""Who may call the cloud's API, and over which part of the community tree.

``roles`` says what each role may do (function-level); ``keys`` makes, lists, revokes
and checks API keys; ``principal`` is what a checked key grants one request: a role
and the set of community nodes it reaches (object-level). The API applies both on
every route (``cloud.api.security``).
"""
