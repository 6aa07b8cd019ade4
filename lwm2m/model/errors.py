"""Errors of the data-model layer.

Every error raised by ``lwm2m.model`` derives from :class:`ModelError`, so callers above can
catch the layer as a whole; each also derives from :class:`ValueError` because in every case the
caller handed in a value that the LwM2M data model cannot hold.
"""


class ModelError(ValueError):
    """Base of every data-model error."""


class InvalidPath(ModelError):
    """A path string or id tuple is not a valid LwM2M path (bad syntax, id out of range)."""


class InvalidValue(ModelError):
    """A value does not fit the LwM2M data type it was declared with."""


class InvalidNode(ModelError):
    """A node is inconsistent (duplicate ids, resource instances on a single resource, ...)."""
