"""Pub/sub between the parts of the platform: in-process (embedded) or Redis (scale).

Events are JSON-able dicts published to a topic. Delivery is best effort: anything that must not
be lost is already durable in the store before it is published, and subscribers that miss events
catch up from the store.
"""

from secureconnect.bus.base import MEMBERSHIP_TOPIC, Bus, Handler, Unsubscribe, user_topic
from secureconnect.bus.memory import InProcessBus

__all__ = ["MEMBERSHIP_TOPIC", "Bus", "Handler", "InProcessBus", "Unsubscribe", "user_topic"]
