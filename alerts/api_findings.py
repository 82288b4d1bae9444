"""The fixed list of findings (处置结论) a task is closed with: code -> Simplified Chinese text."""

__all__ = ["FINDINGS"]

FINDINGS: dict[str, str] = {
    "confirmed_fixed": "情况属实，已责令整改",
    "confirmed_ordered": "情况属实，已下达卫生监督意见书",
    "case_opened": "情况属实，已立案查处",
    "device_fault": "监测设备故障，数据不实",
    "maintenance": "设备维护或校准造成",
    "not_confirmed": "现场核查未见异常",
    "other": "其他（见说明）",
}
