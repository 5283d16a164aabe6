DROP TABLE membership_intents;
