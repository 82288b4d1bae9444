"""Chinese labels and Grafana units for kinds, metrics and states shown to the duty desk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from weijian.contract import CATALOGUE, Kind

__all__ = ["KIND_TITLES", "METRIC_LABELS", "grafana_unit"]

KIND_TITLES: Final[Mapping[Kind, str]] = {
    Kind.DRINKING_WATER: "生活饮用水",
    Kind.SWIMMING_POOL: "游泳池水",
    Kind.MEDICAL_WASTE: "医疗废物暂存",
    Kind.COLD_CHAIN: "疫苗冷链",
}

METRIC_LABELS: Final[Mapping[str, str]] = {
    "free_chlorine": "游离氯",
    "total_chlorine": "总氯",
    "combined_chlorine": "化合性余氯",
    "turbidity": "浑浊度",
    "ph": "pH",
    "conductivity": "电导率",
    "temperature": "温度",
    "orp": "氧化还原电位",
    "urea": "尿素",
    "cyanuric_acid": "氰尿酸",
    "circulation_on": "循环净水设备运行",
    "disinfection_on": "消毒设备运行",
    "humidity": "湿度",
    "door_open": "门开启",
    "weight": "暂存重量",
    "power_ok": "市电正常",
}
assert all(m in METRIC_LABELS for metrics in CATALOGUE.values() for m in metrics)

# Contract units to Grafana unit ids; "suffix:" shows the text as is.
_UNITS: Final[Mapping[str, str]] = {
    "mg/L": "suffix: mg/L",
    "NTU": "suffix: NTU",
    "pH": "none",
    "uS/cm": "suffix: μS/cm",
    "degC": "celsius",
    "mV": "mvolt",
    "%RH": "humidity",
    "kg": "masskg",
    "0/1": "bool",
}


def grafana_unit(contract_unit: str) -> str:
    """The Grafana unit id for a contract unit."""
    return _UNITS.get(contract_unit, f"suffix: {contract_unit}")
