"""alerts owns the response to exceedances.

Threshold rules from national standards, the alert lifecycle, inspection tasks and notifications.
"""
