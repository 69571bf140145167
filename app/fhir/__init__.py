"""FHIR R4 interface (/fhir/R4): SupplyRequest over request lines, SupplyDelivery over shipment lines."""
