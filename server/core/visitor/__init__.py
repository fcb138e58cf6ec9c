"""The visitor as the rules see them: profile, cart, identity, device and place, facts."""
