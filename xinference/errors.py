"""Exceptions that cross actor and HTTP boundaries.

Each carries the HTTP status the REST API answers with. They are plain ``Exception``
subclasses with a single message argument so that xoscar can pickle them from a model
process back to the API process unchanged.
"""


class XinferenceError(Exception):
    """Base class: ``status_code`` is the HTTP status, ``error_type`` the OpenAI error type."""

    status_code = 500
    error_type = "internal_error"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidRequestError(XinferenceError):
    """The request is well-formed JSON but asks for something impossible (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ModelNotFoundError(XinferenceError):
    """No running model has the given ``model_uid`` (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"


class RegistrationNotFoundError(XinferenceError):
    """No registration (builtin or custom) has the given ``model_name`` (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"


class ConflictError(XinferenceError):
    """The resource already exists or is in use (HTTP 409)."""

    status_code = 409
    error_type = "conflict_error"


class TooManyRequestsError(XinferenceError):
    """A model's request queue is full (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"


class ModelUnavailableError(XinferenceError):
    """The model's process died or cannot be reached (HTTP 503)."""

    status_code = 503
    error_type = "service_unavailable"


class ModelLoadError(XinferenceError):
    """The model's files could not be found or loaded (HTTP 400: the launch request named
    something this machine cannot run)."""

    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLargeError(XinferenceError):
    """An upload is larger than the documented limit (HTTP 413)."""

    status_code = 413
    error_type = "invalid_request_error"


class AuthenticationError(XinferenceError):
    """No credential, or one that is not valid (unknown API key, bad or expired token)
    (HTTP 401, with ``WWW-Authenticate: Bearer``)."""

    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(XinferenceError):
    """The credential is valid but lacks the permission the route needs (HTTP 403)."""

    status_code = 403
    error_type = "permission_error"


class RequestAbortedError(XinferenceError):
    """The request was aborted by ``POST /v1/models/{uid}/requests/{id}/abort``, or the
    launch by ``POST /v1/models/{uid}/cancel`` (HTTP 499, as nginx logs a request its
    client gave up on)."""

    status_code = 499
    error_type = "request_aborted"


class RequestNotFoundError(XinferenceError):
    """No request (running, or an image/video request with progress) has the given
    ``request_id`` (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"
