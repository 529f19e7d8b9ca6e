"""The messaging plugin's fixtures (defined in messaging_support, which the tests import too)."""

from messaging_support import certificates, mail_server_factory, vendor_server, vendors

__all__ = ["certificates", "mail_server_factory", "vendor_server", "vendors"]
