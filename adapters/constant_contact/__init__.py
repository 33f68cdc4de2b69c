"""The Constant Contact v3 adapter: observe every change, write only through safe paths.

Public API::

    cfg = CtctConfig.from_toml(doc["ctct"])
    async with await open_ctct(cfg, budget=RateBudget(4, 10_000)) as ctct:
        async for page in ctct.observe_contacts(resume, bound): ...
        request, lists = await ctct.observe_lists()
        async for page in ctct.observe_tracking(resume, bound): ...
        outcomes = await ctct.apply(commands)
        ctct.budget_status(); ctct.requests_made
"""

from .adapter import CtctAdapter, open_ctct
from .budget import Budget, BudgetStatus, RateBudget
from .client import CtctRequestError
from .config import CtctConfig
from .tokens import StoredTokens, TokenStore

__all__ = [
    "Budget",
    "BudgetStatus",
    "CtctAdapter",
    "CtctConfig",
    "CtctRequestError",
    "RateBudget",
    "StoredTokens",
    "TokenStore",
    "open_ctct",
]
