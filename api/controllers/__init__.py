"""HTTP controllers: decode, check, delegate to :mod:`api.services`, return."""
