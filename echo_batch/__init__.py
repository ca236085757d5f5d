"""echo-batch: batch LV ejection fraction for echocardiography cohorts."""
