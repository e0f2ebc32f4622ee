"""fedtiny.tasks"""
