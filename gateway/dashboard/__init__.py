"""The operator dashboard surface: server-rendered pages behind the admin token (``/dashboard``).

``serving.DashboardPages`` renders pages from ``gateway.evaluation.protocol.DashboardData``;
``charts`` draws the SVG charts; ``auth`` signs session cookies; ``api_router`` is the HTTP layer.
"""

from gateway.dashboard.serving import DashboardPages

__all__ = ["DashboardPages"]
