"""fedtiny.fleet"""
