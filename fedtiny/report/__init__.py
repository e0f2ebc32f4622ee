"""fedtiny.report"""
