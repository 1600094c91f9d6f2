"""Deploy: InferenceService rollout on a cluster; a local predictor process otherwise."""
