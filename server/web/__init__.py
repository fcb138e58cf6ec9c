"""The web shell: the ASGI app, the widget's socket, the backend API, the dashboard and
the appointment pages. Thin: decoding and behaviour live below."""
