"""Gateway for real boards: a Flower ClientApp (run by a SuperNode) that drives boards over serial/BLE."""
