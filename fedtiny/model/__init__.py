"""fedtiny.model"""
