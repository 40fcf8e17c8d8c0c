"""``liftlm serve``: an OpenAI-compatible HTTP service over LIFT.

    jobs.py     the job table (SQLite): documents, their status and progress, and a log of progress events
    worker.py   the training process: claims queued jobs, runs ``Lift.internalize`` with a progress hook
    engine.py   answering in the web process: one base model, ready adapters loaded as named PEFT adapters (LRU)
    app.py      the FastAPI app: documents, chat completions, models, server-sent events, the web page
    cli.py      the ``serve`` verb (flags, checks, uvicorn)
    static/     the web page (plain HTML/JS, no build step)
"""
