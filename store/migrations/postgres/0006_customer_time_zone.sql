-- The customer's time zone for quiet hours (an IANA name or a +09:00 offset), an optional
-- CRM column beyond the spec; NULL means the configured zone.
ALTER TABLE customers ADD COLUMN time_zone TEXT;
