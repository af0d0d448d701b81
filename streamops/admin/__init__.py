"""What an operator asks a running process, shared by cloudstream and edgestream: the admin
HTTP server (``server``), its flags (``config``), JSON log lines (``jsonlog``), certificate
expiry (``certexpiry``) and the bounded vocabulary of label values (``labels``)."""

from .config import AdminConfig, add_admin_arguments
from .jsonlog import LOG_FORMATS, add_log_format_argument, setup_logging
from .server import AdminServer, Debug

__all__ = [
    "LOG_FORMATS", "AdminConfig", "AdminServer", "Debug", "add_admin_arguments", "add_log_format_argument",
    "setup_logging",
]
