"""Hospital interfaces: HL7 v2 orders over MLLP, FHIR R4 ServiceRequest import, results back.

- ``hl7_orders``: parse ORM^O01 / OMI^O23 into order records; ACKs.
- ``fhir_orders``: ServiceRequest / Bundle JSON into order records.
- ``feed``: new / amended / cancelled orders into the worklist (audited).
- ``receiver``: one HL7 message in, orders stored, ACK out; ``mllp``: listener and client.
- ``file_import``: `radassist import` for .hl7 and .json files.
- ``outbox``: protocol results back to the sender, persistent and in order.
"""
