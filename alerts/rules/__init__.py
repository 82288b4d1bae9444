"""Rule packs (data): one TOML file per monitored kind, loaded by ``weijian.rules``."""
