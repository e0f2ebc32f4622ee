"""fedtiny.config"""
