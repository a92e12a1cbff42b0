#!/usr/bin/env bash
# Test, build and deploy the training service of every model in mlops_settings to ENV (dev unless set).
# Arguments pass through: --dry-run runs the model and service tests and prints the plan without deploying.
set -euo pipefail
export ENV="${ENV:-dev}"
exec mlops deploy training "$@"
