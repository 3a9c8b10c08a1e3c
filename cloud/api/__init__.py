"""The HTTP API: ``create_app(settings)`` builds it; nothing is created at import.

Modules:
    app     -- the application factory and its lifespan (the connection pool)
    deps    -- dependencies as ``Annotated`` aliases (``PoolDep``, ``ConnectionDep``)
    models  -- response models, kept apart from storage rows
    routes  -- one module per resource (``health``, ``incidents``)
"""
