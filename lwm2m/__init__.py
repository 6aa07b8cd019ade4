"""LwM2M protocol (model, codecs, CoAP exchange layer, transports) and the DM server."""
