"""``liftlm serve``: an OpenAI-compatible HTTP service over LIFT.

    jobs.py        the job table (SQLite): documents, their status and progress, and a log of progress events
    worker.py      the training process: claims queued jobs, runs ``Lift.internalize`` with a progress hook
    supervisor.py  starts the worker process from the web process and restarts it when it dies
    engine.py      answering in the web process: one base model, ready adapters loaded as named PEFT adapters (LRU)
    app.py         ``create_app``: settings, lifespan, bearer token, body limit, error handlers, the routers
    settings.py    ``ServeSettings``; errors.py the JSON errors; deps.py what the routers get through ``Depends``
    documents.py   router: ``/v1/documents`` (post, list, read, delete, progress as server-sent events)
    chat.py        router: ``/v1/chat/completions`` (whole or streamed)
    models.py      router: ``/v1/models`` and ``/v1/status``
    page.py        router: the web page at ``/`` and ``/static``
    cli.py         the ``serve`` verb (flags, checks, uvicorn)
    static/        the web page (plain HTML/JS, no build step)
"""
