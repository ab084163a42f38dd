"""Keep provider secrets out of admin pages, logs and error messages."""

MASK = "••••••••"
SECRET_WORDS = ("token", "secret", "password", "private")


def is_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def masked(config: dict) -> dict:
    """A copy of a provider config with every secret value replaced by MASK."""
    return {k: (MASK if is_secret(k) and v else v) for k, v in (config or {}).items()}


def unmasked(submitted: dict, stored: dict) -> dict:
    """Put back the stored secret where a form sent the mask unchanged."""
    return {k: (stored.get(k) if is_secret(k) and v == MASK else v) for k, v in submitted.items()}


def scrub(text: str, config: dict) -> str:
    """Remove any secret value of the config from a message."""
    for key, value in (config or {}).items():
        if is_secret(key) and isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, MASK)
    return text
