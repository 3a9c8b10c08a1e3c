"""Analysis of elderly residents' wristband data at the gateway.

Turns heart rate, motion and steps, and the band's own fall flag, into findings
(abnormal heart rate, inactivity, a confirmed fall) that the agent sends as events.
It works on normalised readings and events only, so it knows no protocol, broker or
spool, and it runs on the gateway so that a fall is confirmed within seconds even
while the uplink is down (docs/wearables.md, "Analysis at the edge").
"""
