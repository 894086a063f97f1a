"""Labels: natural labels with their maturity, programmatic labeling functions and the label model that combines them."""
