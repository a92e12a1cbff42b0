# The model template that `mlops init` copies into new repos, not tests of this package: a `pytest` run from the
# framework's root must not collect it (its model_code package would clash with the repo's own model_code/).
collect_ignore_glob = ["*"]
