"""The browser tests' Chromium: Debian's chromium, driven through its chromedriver (one per test)."""
from __future__ import annotations

import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    # no skip: `make setup` installs chromium and chromium-driver, and a missing one is a failure
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "chromium/chromium-driver missing: run make setup"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-extensions", "--no-first-run", "--password-store=basic"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
