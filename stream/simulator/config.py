"""The simulated shop's settings (:class:`SimConfig`) and the constants of its world: time zones, devices,
the diurnal curve of session starts and the organic funnel's coefficients (``docs/simulator.md``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stream.contract import CatalogUpdate, ConsentUpdate, Event

DAY = 86_400.0
HOUR = 3_600.0
# Bumped whenever a seed's world changes (caches of generated events and the models trained on them
# are keyed by it). 2: random streams split per user, session, push and stock-out.
WORLD_VERSION = 2

Message = Event | CatalogUpdate | ConsentUpdate

# (IANA zone, locale, share of users): a mix of European, American and Asian shoppers.
TIME_ZONES: tuple[tuple[str, str, float], ...] = (
    ("Europe/London", "en-GB", 0.10),
    ("Europe/Berlin", "de-DE", 0.12),
    ("Europe/Paris", "fr-FR", 0.08),
    ("Europe/Madrid", "es-ES", 0.05),
    ("Europe/Rome", "it-IT", 0.05),
    ("Europe/Warsaw", "pl-PL", 0.05),
    ("America/New_York", "en-US", 0.12),
    ("America/Chicago", "en-US", 0.07),
    ("America/Los_Angeles", "en-US", 0.08),
    ("America/Sao_Paulo", "pt-BR", 0.05),
    ("America/Mexico_City", "es-MX", 0.03),
    ("Asia/Tokyo", "ja-JP", 0.06),
    ("Asia/Singapore", "en-SG", 0.04),
    ("Asia/Kolkata", "en-IN", 0.06),
    ("Asia/Seoul", "ko-KR", 0.04),
)
DEVICES: tuple[tuple[str, float], ...] = (("ios", 0.4), ("android", 0.4), ("web", 0.2))

# Relative session-start intensity by LOCAL hour: quiet nights, a lunch bump, an evening peak.
DIURNAL: tuple[float, ...] = (
    0.25, 0.12, 0.06, 0.04, 0.04, 0.06, 0.15, 0.35, 0.55, 0.65, 0.70, 0.75,
    0.85, 0.85, 0.75, 0.70, 0.70, 0.80, 0.95, 1.00, 1.00, 0.95, 0.80, 0.50,
)  # fmt: skip

# The organic funnel (docs/simulator.md): browsing softmax sharpness, then logistic cart and checkout
# probabilities of the true utility, tuned to RetailRocket-like ratios (~6 % of views carted, ~30 % of
# carted items bought).
BROWSE_SHARPNESS = 1.2
CART_BIAS = -6.6
CHECKOUT_BIAS = -4.2
CHECKOUT_INTEREST = 0.6


class SimConfig(BaseModel):
    """Parameters of the simulated shop. Defaults give a plausible mid-size shop."""

    # NaN or an infinity in any rate, bias or time makes every draw that reads it meaningless.
    model_config = ConfigDict(allow_inf_nan=False)

    seed: int = Field(7, ge=0, description="Seed of every random draw; same seed, same world, same events.")
    n_users: int = Field(5_000, ge=1, description="Number of shoppers.")
    n_items: int = Field(3_000, ge=1, description="Number of catalog items.")
    n_categories: int = Field(
        24, ge=1, description="Number of item categories (at most n_items: none is empty)."
    )
    latent_dim: int = Field(8, ge=2, description="Dimension of the latent taste / item vectors.")
    start_time: float = Field(
        1_780_272_000.0,
        ge=946_684_800.0,
        lt=4_102_444_800.0,
        description="Simulated clock at the start (2026-06-01T00:00Z); within the contract's event times.",
    )
    speed: float = Field(60.0, gt=0, description="Simulated seconds per real second in real-time runs.")
    events_per_second: float | None = Field(
        None,
        gt=0,
        description="Target event rate in real-time runs; when set it paces the run instead of speed.",
    )
    id_prefix: str | None = Field(None, description="Prefix of event and session ids; default 's<seed>-'.")
    sessions_per_day: float = Field(
        0.6, gt=0, description="Mean sessions per user per day (activity varies)."
    )
    mean_session_actions: float = Field(7.0, ge=1, description="Mean number of actions in a session.")
    opt_out_share: float = Field(0.03, ge=0, le=1, description="Share of users opted out from the start.")
    promotion_rate: float = Field(0.01, ge=0, description="Promotions started per item per simulated day.")
    price_drop_rate: float = Field(0.005, ge=0, description="Price drops per item per simulated day.")
    restock_hours: float = Field(36.0, gt=0, description="Mean time until a sold-out item is restocked.")
    need_days: float = Field(3.0, gt=0, description="Mean lifetime of a user's current shopping need.")
    # Response model (docs/simulator.md): logistic coefficients.
    open_bias: float = Field(
        -3.6, description="theta0: logit of P(open) at neutral interest, day, no fatigue."
    )
    open_interest: float = Field(0.45, description="theta1: weight of the true utility in P(open).")
    open_out_of_stock: float = Field(1.0, description="theta_oos: logit penalty when the item is sold out.")
    open_fatigue_24h: float = Field(0.35, description="theta24: logit penalty per push in the previous 24 h.")
    open_fatigue_7d: float = Field(0.08, description="theta7: logit penalty per push in the previous 7 days.")
    open_night: float = Field(1.8, description="theta_night: logit penalty at full night (00-06 local).")
    click_bias: float = Field(-1.0, description="phi0: logit of P(click | open) at neutral interest.")
    click_interest: float = Field(0.3, description="phi1: weight of the true utility in P(click | open).")
    buy_bias: float = Field(-3.5, description="psi0: logit of P(purchase | click) at neutral interest.")
    buy_interest: float = Field(0.4, description="psi1: weight of the true utility in P(purchase | click).")
    dismiss_bias: float = Field(-1.2, description="omega0: logit of P(dismiss | not opened).")
    dismiss_night: float = Field(1.0, description="omega_night: extra dismiss logit at full night.")
    dismiss_fatigue_24h: float = Field(0.2, description="omega24: extra dismiss logit per push in 24 h.")
    opt_out_bias: float = Field(-7.0, description="eta0: logit of P(opt out) per push.")
    opt_out_fatigue_24h: float = Field(0.6, description="eta24: opt-out logit per push in the previous 24 h.")
    opt_out_fatigue_7d: float = Field(0.1, description="eta7: opt-out logit per push in the previous 7 days.")
    opt_out_night: float = Field(1.5, description="eta_night: opt-out logit at full night.")
