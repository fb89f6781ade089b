"""The HTTP gateway (``python -m services.gateway``): users send photos and read their
predictions over HTTP; the gateway produces PhotoEvents, follows the predictions topic and
keeps each user's photo history. The contract: ``services/gateway/API.md``."""
