"""Automations: scheduled retraining that trains, gates on metrics, redeploys and notifies, run by CDF Data
Workflows. An mlops_automations.py file imports its classes from here; this package's __init__ stays cheap (standard
library only): the file is read in a child process, and the CLI imports the rest (loader, register) lazily.
"""
from akerbp.mlops.automations.spec import (
    Automation,
    BatchExecution,
    BuildMetric,
    CustomWebhook,
    DeployedModelMetric,
    DeploymentSpecifications,
    MetricBasedTrigger,
    ScheduledTrigger,
    SlackNotification,
    SqlMetric,
    ThresholdDirection,
    TrainDeploy,
    TrainingSpecifications,
)

__all__ = [
    "Automation", "ScheduledTrigger", "MetricBasedTrigger", "SqlMetric", "TrainDeploy", "BatchExecution", "TrainingSpecifications", "BuildMetric", "DeployedModelMetric",
    "ThresholdDirection", "DeploymentSpecifications", "SlackNotification", "CustomWebhook",
]
