"""Building blocks shared by brownout's dependency adapters, for writing your own.

>>> from brownout.adapter import Adapter, ErrorRule, ErrorTable
>>> class PaymentsAdapter(Adapter):
...     kind = "payments"
...     errors = ErrorTable(
...         ErrorRule(ConnectionError, True, "connection", "the payments API is unreachable"),
...         ErrorRule(ValueError, False, "caller", "an invalid amount is the caller's mistake"),
...     )
...     def charge(self, amount: int) -> str:
...         return self._run("charge", lambda: f"charged {amount}")
>>> PaymentsAdapter().charge(5)
'charged 5'
"""

from brownout._adapter import Adapter
from brownout._adapter_classify import ErrorRule, ErrorTable
from brownout._adapter_stats import AdapterStats, Figures, OperationEvent, ProbeResult
from brownout._errors import DependencyError
from brownout._options import AdapterOptions

__all__ = [
    "Adapter",
    "AdapterOptions",
    "AdapterStats",
    "DependencyError",
    "ErrorRule",
    "ErrorTable",
    "Figures",
    "OperationEvent",
    "ProbeResult",
]
