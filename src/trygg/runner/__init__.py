"""trygg.runner"""
