"""The MQTT broker follows the registry: each gateway's account and ACLs, the cloud
workers' account, and gateway client certificates (docs/broker.md).

Modules:
    errors        -- the ``BrokerError`` tree
    policy        -- pure: the roles and ACLs of a gateway and of the cloud workers
    dynsec        -- ``DynamicSecurity``: Mosquitto's dynamic-security plugin driven over
                     its control topic (imports aiomqtt for that alone)
    certificates  -- signing a gateway's certificate request with the deployment's client CA

Importing any of these connects to nothing.
"""
