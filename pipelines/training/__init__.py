"""Training: the XGBoost and Keras models, baselines, class imbalance, Optuna tuning and the train stage."""
