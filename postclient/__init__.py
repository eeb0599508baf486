"""postclient: an outbound SMTP/LMTP relay after Postfix's smtp(8)."""

__version__ = "0.1.0"
