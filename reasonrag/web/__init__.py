"""The web page of `reasonrag ui` (a room of its own): its server and its static assets."""
