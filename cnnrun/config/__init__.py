"""The config: its types and rules (schema), the user's own code it names (plugins), secrets kept out of every copy (redact)."""
