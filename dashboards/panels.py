"""Panel builders shared by the dashboards: time series, stat and table over our targets."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

__all__ = [
    "display_name",
    "rename",
    "stat_panel",
    "table_panel",
    "text_mapping",
    "thresholds",
    "timeseries_panel",
]

Target = cogbuilder.Builder[cogvariants.Dataquery]


def thresholds(steps: Sequence[Threshold]) -> dash.ThresholdsConfig:
    """Absolute thresholds from ``steps``."""
    return dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(list(steps))


def timeseries_panel(
    title: str, targets: Sequence[Target], source: DataSourceRef, unit: str,
    steps: Sequence[Threshold] | None = None, description: str = "",
) -> timeseries.Panel:
    """A time series; with ``steps``, the thresholds are drawn as coloured bands and lines."""
    panel = (
        timeseries.Panel().title(title).datasource(source).targets(list(targets)).unit(unit)
        .height(8).span(12).span_nulls(False)
    )
    if description:
        panel = panel.description(description)
    if steps is not None:
        panel = panel.thresholds(thresholds(steps)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA)
        )
    return panel


def stat_panel(title: str, targets: Sequence[Target], source: DataSourceRef,
               steps: Sequence[Threshold]) -> stat.Panel:
    """A single number coloured by ``steps``."""
    return (
        stat.Panel().title(title).datasource(source).targets(list(targets))
        .thresholds(thresholds(steps)).color_mode(common.BigValueColorMode.BACKGROUND)
        .height(5).span(6)
    )


def table_panel(title: str, targets: Sequence[Target], source: DataSourceRef,
                transformations: Sequence[DataTransformerConfig] = ()) -> table.Panel:
    """A table, optionally reshaped by Grafana transformations."""
    panel = table.Panel().title(title).datasource(source).targets(list(targets)).height(9).span(12)
    for transformation in transformations:
        panel = panel.with_transformation(transformation)
    return panel


def rename(columns: dict[str, str]) -> DataTransformerConfig:
    """An ``organize`` transformation giving columns their Chinese names."""
    return DataTransformerConfig(id_val="organize", options={"renameByName": columns})


def text_mapping(values: dict[str, tuple[str, str]]) -> list[ValueMap]:
    """Value mappings ``raw -> (text, colour)``."""
    return [
        ValueMap(options={k: ValueMappingResult(text=text, color=colour, index=i)})
        for i, (k, (text, colour)) in enumerate(values.items())
    ]


def display_name(name: str) -> DynamicConfigValue:
    """An override property setting a field's display name."""
    return DynamicConfigValue(id_val="displayName", value=name)
