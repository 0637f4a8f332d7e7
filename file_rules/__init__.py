"""Rules an uploaded file must follow, applied by both the API's upload check (app/files/formats/)
and the worker's engine, so the two can never disagree.

Standard library only: the API never imports torch or the worker, and the engine never imports the
API; both may import this package.
"""
